"""Training methods for the transformer policy: BC, DAgger sessions, DPO (+ constitution-made pairs, reward model, best-of-N)."""
