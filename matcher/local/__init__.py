"""Local verification engine: image -> local features -> matches -> geometric fit -> evidence -> score.

Modules: ``types`` (data types), ``features`` (extractors), ``store`` (on-disk feature store and cache);
matching, geometry and evidence live in sibling modules. Import the module you need; nothing heavy is
imported here.
"""
