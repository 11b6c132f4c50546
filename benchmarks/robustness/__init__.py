"""Bad inputs, faults and interruptions."""
