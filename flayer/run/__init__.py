"""A run's lifecycle: open or continue its folder, run it (simulated), stop it cleanly."""
