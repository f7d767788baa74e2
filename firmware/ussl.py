# umqtt.simple (1.3.4) imports `ussl`; MicroPython >= 1.23 names that module `ssl`.
from ssl import *  # noqa: F401,F403
