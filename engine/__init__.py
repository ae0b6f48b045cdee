"""IIAE engine: recipes, models, objective, data, training, evaluation and Hub publishing."""

__version__ = "0.1.0"
