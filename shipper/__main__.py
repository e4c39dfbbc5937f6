"""``python -m shipper`` runs the same command line as the ``flume-ship`` script."""

from shipper.cli import main

if __name__ == "__main__":
    main()
