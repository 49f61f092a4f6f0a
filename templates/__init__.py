"""The Jinja templates, shipped in the wheel as the package generator.templates."""
