"""The build stage: render the Plan into build/<name>/ (lock, script), check it, eject it."""
