-- Prints the path of the Neovim binary running this script.
io.stdout:write(vim.v.progpath, "\n")
