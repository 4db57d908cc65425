"""The built-in demo model: synthetic scenes, their checker, training and the held-out evaluation."""
