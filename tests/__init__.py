"""The test tiers: unit (no broker), integration, system; shared code in support."""

import pytest

# Asserts in shared support code report their operands like those in test modules
# (registered here, before tests.conftest imports tests.support).
pytest.register_assert_rewrite("tests.support")
