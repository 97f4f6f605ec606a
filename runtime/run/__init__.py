"""The run stage: pre-flight, launch the generated script, watch it, record how it went."""
