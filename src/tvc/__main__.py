from tvc.cli.main import run

run()
