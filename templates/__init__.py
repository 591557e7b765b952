"""config.pbtxt templates (*.pbtxt.j2) and the python-backend adapters (python/*.py).

Data, not code: installed as the package `tuner.templates` so tuner/resources.py finds them.
"""
