from tests.fabric_support import fab  # noqa: F401 (fixture)
