-- Defines :Norgopolis only; everything else loads on first use.
if vim.g.loaded_norgopolis then
  return
end
vim.g.loaded_norgopolis = 1

vim.api.nvim_create_user_command("Norgopolis", function(opts)
  require("norgopolis.commands").run(opts)
end, {
  nargs = "*",
  desc = "norgopolis: status | start | modules | load | unload | restart | call | install | shutdown | log",
  complete = function(lead, cmdline, pos)
    return require("norgopolis.commands").complete(lead, cmdline, pos)
  end,
})
