"""transformers' own common test suites applied to our classes (a package, so its conftest is not the
module ``conftest`` that the other test files import from)."""
