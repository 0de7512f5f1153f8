from crawlq_cli.main import main

main()
