# Runs first at every reset. Kept empty on purpose: anything that can fail here would stop
# main.py from reporting a clear error on the console.
