"""The plan stage: spec + measured inputs -> the typed, frozen Plan (with the hardware planner)."""
