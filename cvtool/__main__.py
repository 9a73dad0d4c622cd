from cvtool.cli.app import main

main()
