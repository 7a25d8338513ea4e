"""Program runner, errors, progress bars and parallel execution."""
