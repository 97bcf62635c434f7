"""The contract and what every stage shares: registries, metrics, results, the content-addressed cache, seeds."""
