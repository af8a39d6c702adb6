# Fixtures live in fixtures/ (what applies the documented configuration);
# options, markers and reporting in the haconform pytest plugin.
pytest_plugins = ["fixtures.deployment", "fixtures.stages", "fixtures.restore", "fixtures.left_out"]
