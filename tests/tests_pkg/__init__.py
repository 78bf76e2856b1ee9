"""A user's own package: a model factory and a dataset factory, as a researcher would write them."""
