"""Tasks: each prepares measured ground truth and scores explanations against it."""
