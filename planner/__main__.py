from planner.cli import main

if __name__ == "__main__":  # importing the module (a tool that inspects or spawns it) must not run the CLI
    main()
