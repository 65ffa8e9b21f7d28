/* HOSTILE: #include <../../solutions/01-blocking-sleep/solution.c> (angle brackets, relative to the include path) -- base: none */
#include <../../solutions/01-blocking-sleep/solution.c>
