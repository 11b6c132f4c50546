"""The probe stage: measure or estimate training steps and plan the accumulation for a budget.

Imports only the base (planner.base); the CLI on top composes it with the other stages."""
