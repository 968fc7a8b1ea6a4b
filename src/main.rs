fn main() {
    std::process::exit(hbfence::cli::main());
}
