"""The kernel a plugin author must understand: hook specs, the Step and Run records, the run
config, per-sample state, plugin discovery, roles and the hook facade, and the core's own
update. It may import only the foundation modules (advcore.errors, advcore.attacks,
advcore.losses, advcore.progress); the data types it names are imported for type checking only.
"""
