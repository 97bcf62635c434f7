"""The harness: runner, config, leaderboard and the command line."""
