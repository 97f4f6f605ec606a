"""The `ftc` command line: one small function per verb, above both the compiler and the runtime."""
