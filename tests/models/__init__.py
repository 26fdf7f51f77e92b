"""Model tests (a package, so test_config.py here and tests/test_config.py import as different modules)."""
