"""Where a run's files live, for every package above it:

mirror.py  a local mirror of object storage (fetch what is read, publish what is written)
files.py   writes that land whole or not at all (a temporary name, then a rename)
lock.py    one command at a time in a run directory; its Ray Train workers watch the lock
integrity.py  cached files sealed (size, content hash) when written and checked before they are trusted
"""
