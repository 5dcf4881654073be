"""Fast tests of one module or component each: pure functions, mocked replies, small files."""
