//! The process environment, read one way everywhere: a variable that is unset, not Unicode or
//! blank is absent.

/// The value of `name`, if it is set to something other than blank.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
