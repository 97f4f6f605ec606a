"""ftc.runtime: executes a compiled build. Checks it is current, then runs its script as a child process."""
