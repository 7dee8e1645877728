"""The test suite is a package, so tests import shared helpers by their path from the repository root:
`from tests.data import fixtures`, `from tests.training.synthetic import SyntheticDataset`."""
