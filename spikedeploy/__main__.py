from spikedeploy.cli.main import main

main()
