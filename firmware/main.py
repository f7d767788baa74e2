# Vigil wearable entry point (runs after boot.py).
from vigil_fw import main

main.run()
