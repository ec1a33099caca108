// Entry point of the `moat` command-line tool; everything lives in src/cli.
#include <iostream>

#include "cli/cli.h"

int main(int argc, char** argv) { return moat::cli::Main(argc, argv, std::cout, std::cerr); }
