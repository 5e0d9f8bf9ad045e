from tvc.cli.launcher import run

run()
