from medseg.cli.app import main

main()
