"""Presentation: what reads result files (through fexbench.analysis) and shows them.

Leaderboard tables (leaderboard), word clouds (wordcloud_png) and the static site (site, with
merge, markup, assets, intervals, plots, declared, browser). Nothing here runs a task or an
explainer: it reads files and renders them, as HELM's presentation layer does.
"""
