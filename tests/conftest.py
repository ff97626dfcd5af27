pytest_plugins = ["tests.testbed_fixture"]
