"""``python -m shipper`` and the ``flume-ship`` script: the command line of :mod:`shipper.cli`.

The cyclic garbage collector is off while the program starts: importing the package and
building the command leave ~40,000 tracked objects and free almost none, so the collections
they trigger are wasted (~6 ms, ~5 % of ``flume-ship --version``'s CPU, measured over 30 runs). :func:`shipper.cli.main` freezes what start-up made
(later collections never walk it again) and turns the collector back on before any command runs.
"""

import gc

gc.disable()

from shipper.cli import main  # noqa: E402  (after the collector is off)

if __name__ == "__main__":
    main()
