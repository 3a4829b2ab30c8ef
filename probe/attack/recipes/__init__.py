"""Attack recipes: named compositions of goal, sources, constraints and search."""
