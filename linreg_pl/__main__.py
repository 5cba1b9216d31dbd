from linreg_pl.cli import main

main()
