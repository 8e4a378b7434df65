"""Where trained models live and how a service finds one: the MLflow registry (versions,
the ``champion``/``challenger`` aliases) and the BentoML model store (the exported estimator
with its feature reference). Used by the trainer (register, promote, export) and by the
model service (resolve ``@champion``, load), so neither imports the other."""
