"""The built-in tasks. Each registers through the `nlptoolkit.plugins` entry point
in setup.cfg, exactly as a third-party package would, and uses only what
`nlptoolkit` exports."""
