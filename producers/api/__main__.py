from producers.api.app import main

main()
