"""Recipes that build on the roles below them: the supervised warm start of the tiny model."""
