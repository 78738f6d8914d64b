"""The decision side: SB3 algorithm registry, baselines, the learning-manager wrapper and callback,
promotion bundles and the live runner."""
