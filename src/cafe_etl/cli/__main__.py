from cafe_etl.cli import main

main()
